def tick(data, context):
    return {"ticked": True}

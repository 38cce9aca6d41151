"""The operator's commands: check, run, history and jobs (app.py dispatches; the daemon's
loop stays in app.py). `options` holds what they share: the parser, where the config came
from, loading it, and writing to a pipe that may close."""

"""config.json: its models (models, chain, the environments' auth), loading with located
errors and ${VAR} interpolation (load), edits that keep every other byte (edit), and the
JSON Schema editors read (schema, with what the validators accept beyond types from
constraints)."""

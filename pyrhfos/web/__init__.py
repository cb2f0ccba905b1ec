"""piranha-gui: the web interface (app.py: Flask routes; edits.py: form values to a checked lvs.cf)."""

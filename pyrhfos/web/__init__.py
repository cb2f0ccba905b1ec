"""piranha-gui, the web interface: the app factory (app), login (auth), the control page (control),
the edit pages (views) and form values to a checked lvs.cf (edits); piranha-passwd (passwd)."""

"""The monitor's live dashboard: a page, its static files, and server-sent events of state changes."""

"""`ponder serve`: an OpenAI-compatible server that runs composed systems, and its browser view."""

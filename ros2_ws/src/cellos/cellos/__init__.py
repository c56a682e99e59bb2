"""cellos: cell-level operating layer for AI-driven factory lines."""

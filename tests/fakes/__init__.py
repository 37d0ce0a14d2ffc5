"""Local stand-ins for remote services (Azure), usable as pytest fixtures or context managers."""

"""Root conftest: makes the repository importable as in an installed checkout."""

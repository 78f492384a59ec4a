"""Fakes of outside services for tests (a real local HTTP server, not mocks)."""

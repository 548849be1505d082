"""Tests for storyloop.studies."""

"""Rendering the status facts: terminal text, JSON, and the HTML report with its charts."""

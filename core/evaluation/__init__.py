"""Evaluation of building use (classification) and height (regression) against references, and reports."""

"""
Stands in for a missing prometheus_client (put this folder first on
PYTHONPATH): importing it fails as if it were not installed.
"""

raise ImportError("No module named 'prometheus_client'")

"""The gateway: question intake (service.py) and its HTTP adapter (http.py)."""

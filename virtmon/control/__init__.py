"""The local control API: HTTP/1.1 + JSON over a Unix socket, versioned under /v1/."""

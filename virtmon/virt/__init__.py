"""The only package that imports libvirt: event loop adapter, connection supervisor, calls, stats.

libvirt's camelCase stops here; everything outside sees plain Python values.
"""

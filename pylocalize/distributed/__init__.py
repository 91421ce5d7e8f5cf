"""Distributed pylocalize on Ray (extra ``dist``)."""

"""The cluster dashboard: page, live events, metrics and the view they share."""

"""cnnwidgets.app."""

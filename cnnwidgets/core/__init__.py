"""cnnwidgets.core."""

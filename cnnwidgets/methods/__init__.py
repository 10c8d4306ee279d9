"""cnnwidgets.methods."""

"""cnnwidgets.zoo."""

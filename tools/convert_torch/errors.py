class ConversionError(Exception):
  """Bad input to the converter; the message names the file, key or field and what was expected."""

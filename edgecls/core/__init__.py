"""The foundation every stage stands on: options, errors, atomic files, the run folder.

Standard library only, except :mod:`edgecls.core.keras`, the one place host code gets
TensorFlow and Keras from (the device runtime never imports it).
"""

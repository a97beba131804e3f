"""TF-free device runtime: interpreter loading, Classifier, camera loop, bench.

Nothing under this package may import TensorFlow (directly or through another module).
"""

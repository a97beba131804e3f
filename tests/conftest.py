"""Shared fixtures: small real data and models made in tmp dirs, never downloaded."""

from __future__ import annotations

import os

# Must be set before anything imports TensorFlow (tfmot needs Keras 2).
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

"""An example Flowcraft bundle in Python: three node types, each in its own module."""

from flowcraft_node import Bundle

from .fail import fail
from .greet import greet
from .words import word_count

bundle = Bundle([greet, word_count, fail])

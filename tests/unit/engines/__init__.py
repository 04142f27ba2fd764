"""Unit tests of the engines Orchestra ships (engines/)."""

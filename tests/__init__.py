"""The test suite, one folder per layer (see CONTRIBUTING.md, "Tests"); ``helpers`` holds what several share."""

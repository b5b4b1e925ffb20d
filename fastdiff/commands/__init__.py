"""The `fastdiff` commands' parts: argument checks that run before any model loads (checks), the
one-line error every mistake ends in (errors), what --model names (model_source), and the sample
and train commands themselves."""

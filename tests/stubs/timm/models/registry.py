"""timm's ``register_model`` decorator, reduced to what the reference needs: a name table."""
_MODELS = {}


def register_model(fn):
    _MODELS[fn.__name__] = fn
    return fn

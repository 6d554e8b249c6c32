"""The bundled agent (torch): base transformer, MetaController, internal RL (later issues)."""

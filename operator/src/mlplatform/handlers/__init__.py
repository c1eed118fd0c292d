"""kopf handlers: parse the object, build what it needs, apply it, record status. Importing this package
registers them."""

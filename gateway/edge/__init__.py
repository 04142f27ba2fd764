"""The HTTP edge: the app, the route table, middleware, auth and the one error shape."""

#!/bin/sh
# The container image's entrypoint, under tini (PID 1): /data's folders, then the command
# (default `orchestra up`), exec'd so that tini's SIGTERM reaches it.
#
# In the image, models/, logs/, run/ and .orchestra/batch/ of /opt/orchestra (the paths the
# configs leave relative) link into the /data volume. A volume that starts empty (a bind mount,
# a Kubernetes volume) gets the folders here; `orchestra up` then builds the models into it.
if ! mkdir -p /data/models /data/logs /data/run /data/batch /data/usage 2>/dev/null; then
    echo "orchestra: /data is not writable by uid $(id -u); mount a volume it owns" >&2
fi
exec "$@"

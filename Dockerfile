# contabo-rotator container image.
#
#   docker build -t localhost/contabo-rotator:0.1.0 .
#   docker run --rm --read-only -v rotator-state:/var/lib/contabo-rotator \
#     -v ./config.toml:/etc/contabo-rotator/config.toml:ro \
#     -v ./secrets:/run/secrets/contabo:ro localhost/contabo-rotator:0.1.0 --run-now
#
# The default command runs the daemon; pass `--run-now` for a job. The image
# runs as uid 65532, works with a read-only root filesystem and keeps its
# state on a volume. It holds the binary, the shared libraries it loads, the
# CA bundle and nothing else (no shell).
#
# Without access to a registry, scripts/build-image builds the same image:
# it builds the binary on the host, assembles /image with the same script
# and passes its parent as the `build` stage (`podman build --build-context
# build=DIR`), so only the runtime stage below runs.

ARG RUST_IMAGE=rust:1-bookworm
FROM ${RUST_IMAGE} AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY simulator ./simulator
COPY benches ./benches
COPY scripts/image-rootfs ./scripts/image-rootfs
RUN cargo build --release --locked --bin contabo-rotator \
 && scripts/image-rootfs target/release/contabo-rotator /image

FROM scratch AS runtime
COPY --from=build /image/rootfs /
# Owned by the user the image runs as: a new volume mounted here takes the
# directory's owner and mode (0700).
COPY --from=build --chown=65532:65532 /image/state /var/lib/
ENV STATE_DIRECTORY=/var/lib/contabo-rotator
VOLUME ["/var/lib/contabo-rotator"]
USER 65532:65532
# The configuration is read from /etc/contabo-rotator/config.toml (the
# default of `-c`); mount it there, or pass `-c PATH`.
ENTRYPOINT ["/usr/local/bin/contabo-rotator"]
CMD []

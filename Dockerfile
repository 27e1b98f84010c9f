# contabo-rotator container image.
#
#   docker build -t contabo-rotator .
#   docker run --rm -v rotator-state:/var/lib/contabo-rotator \
#     -v ./config.toml:/etc/contabo-rotator/config.toml:ro \
#     -v ./secrets:/run/secrets:ro contabo-rotator --run-now
#
# The default command runs the daemon; pass `--run-now` for a job. The image
# runs as a non-root user (65532) and keeps its state on a volume.

FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY simulator ./simulator
COPY benches ./benches
RUN cargo build --release --locked --bin contabo-rotator \
 && strip target/release/contabo-rotator

# distroless/cc: glibc and CA roots only, no shell; "nonroot" is uid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/contabo-rotator /usr/local/bin/contabo-rotator
ENV STATE_DIRECTORY=/var/lib/contabo-rotator
VOLUME ["/var/lib/contabo-rotator"]
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/contabo-rotator", "-c", "/etc/contabo-rotator/config.toml"]
CMD []

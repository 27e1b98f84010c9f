//! Render benchmark: how long an aggregate file sink takes to render every
//! credential of a large account, in each format that lists them all, and
//! a template sink whose template loops over them all (an `aws-credentials`
//! file without its comments).
//!
//! ```sh
//! cargo bench --bench render                    # 10,000 users x 3 credentials, 20 renders each
//! cargo bench --bench render -- --users 1000 --renders 50
//! ```
//!
//! A pass rewrites its aggregate files every `wait` while changes come, so
//! at 30,000 credentials it renders each of them tens of times: this is
//! most of the CPU a large pass spends outside HTTP. The output goes
//! through a 64 KiB buffer into a SHA-256 hasher, as a sink's content goes
//! into its temp file and its fingerprint. Prints the median and the
//! fastest render of each format, and the size of one render.

use std::io::Write;
use std::time::{Duration, Instant};

use contabo_rotator::sinks::formats;
use contabo_rotator::sinks::snapshot::{group, Keys, Snapshot, SnapshotCredential, Storage};
use contabo_rotator::sinks::template::{Context, Template};
use sha2::Digest;

/// Counts and hashes what is written, as a sink's fingerprint does.
struct Hashing {
    hasher: sha2::Sha256,
    bytes: usize,
}

impl Write for Hashing {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.hasher.update(bytes);
        self.bytes += bytes.len();
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn snapshot(users: usize) -> Snapshot {
    let storages = [
        Storage::new(
            "os-eu",
            "Object Storage EU",
            "European Union",
            "https://eu2.contabostorage.com",
        ),
        Storage::new(
            "os-us",
            "Object Storage US",
            "United States (Central)",
            "https://usc1.contabostorage.com",
        ),
    ];
    let rotated = chrono::DateTime::from_timestamp(1_796_400_000, 0);
    let groups = (0..users)
        .map(|u| {
            let user_id: std::sync::Arc<str> = format!("{u:08x}-5f1e-4c7a-9d3b-{u:012x}").into();
            let email: std::sync::Arc<str> = format!("User.{u}@Example.com").into();
            let credentials: Vec<SnapshotCredential> = (0..3)
                .map(|i| {
                    let id = (u * 3 + i) as i64 + 1;
                    SnapshotCredential {
                        user_id: user_id.clone(),
                        user_email: email.clone(),
                        storage: storages[i % 2].clone(),
                        credential_id: id,
                        keys: Keys::new(
                            &format!("AK{id:018}"),
                            &format!("{id:040}").replace('0', "x"),
                        ),
                        rotated_at: if i == 0 { rotated } else { None },
                        twin: None,
                    }
                })
                .collect();
            group(&credentials)
        })
        .collect();
    Snapshot {
        client: None,
        groups,
    }
}

type Render<'a> = Box<dyn Fn(&Snapshot, &mut dyn Write) -> std::io::Result<()> + 'a>;

fn main() {
    let mut users = 10_000;
    let mut renders = 20;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| -> usize {
            args.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{name} takes a number"))
        };
        match arg.as_str() {
            "--users" => users = value("--users"),
            "--renders" => renders = value("--renders"),
            // `cargo bench` passes `--bench`.
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    let snapshot = snapshot(users);
    println!("{} credentials, {renders} renders each", snapshot.count());
    println!("| format | median | fastest | bytes |");
    println!("| --- | --- | --- | --- |");
    // A template sink holding every credential, written like the
    // aws-credentials format.
    let dir = tempfile::tempdir().expect("a temporary directory");
    let source = dir.path().join("credentials.j2");
    std::fs::write(
        &source,
        "{% for c in object_storage_credentials %}\
         [{{ c | aws_profile }}]\n\
         aws_access_key_id = {{ c.access_key | ini_value }}\n\
         aws_secret_access_key = {{ c.secret_key | ini_value }}\n\
         region = {{ c.region | region_code }}\n\n\
         {% endfor %}",
    )
    .expect("the template is written");
    let template = Template::compile(&source).expect("the template compiles");
    let redactor = snapshot.redactor();
    let formats: [(&str, Render); 4] = [
        (
            "aws-credentials",
            Box::new(|s, out| {
                formats::write_aws_credentials(s, out)
                    .map_err(|e| std::io::Error::other(e.to_string()))
            }),
        ),
        (
            "aws-config",
            Box::new(|s, out| {
                formats::write_aws_config(s, out).map_err(|e| std::io::Error::other(e.to_string()))
            }),
        ),
        ("json", Box::new(|s, out| s.write_json(out))),
        (
            "template",
            Box::new(|s, out| {
                template
                    .render_into(&Context::new(s), out, &redactor)
                    .map_err(|e| std::io::Error::other(e.to_string()))
            }),
        ),
    ];
    for (name, render) in formats {
        let mut times: Vec<Duration> = Vec::with_capacity(renders);
        let mut bytes = 0;
        for _ in 0..renders {
            let mut sink = Hashing {
                hasher: sha2::Sha256::new(),
                bytes: 0,
            };
            let started = Instant::now();
            {
                let mut out = std::io::BufWriter::with_capacity(64 * 1024, &mut sink);
                render(&snapshot, &mut out).expect("the snapshot renders");
                out.flush().expect("hashing does not fail");
            }
            std::hint::black_box(sink.hasher.finalize());
            times.push(started.elapsed());
            bytes = sink.bytes;
        }
        times.sort();
        println!(
            "| {name} | {:.1} ms | {:.1} ms | {bytes} |",
            times[times.len() / 2].as_secs_f64() * 1e3,
            times[0].as_secs_f64() * 1e3,
        );
    }
}

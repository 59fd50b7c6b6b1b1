//! A bounded fuzz run of the master's message-handling edge: every RPC the protocol defines
//! (read from its descriptor) is sent, with the right secret, bodies of random bytes and of
//! random protobuf fields (which decode into messages with hostile values). The master must
//! answer each with a proper status, keep running, let nothing invalid into its state, and
//! still load that state after a restart.
//!
//! No worker is attached: a random but valid submission would otherwise run a random command.

mod support;

use std::time::Duration;

use bytes::{Buf, BufMut};
use rand::{Rng, SeedableRng, rngs::StdRng};
use support::Cluster;
use tonic::{
    Code, Status,
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
};

/// Sends and receives message bodies as they are, so the master's own decoding is what is
/// tested.
#[derive(Default, Clone)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        let mut out = vec![0; src.remaining()];
        src.copy_to_slice(&mut out);
        Ok(Some(out))
    }
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Random protobuf: fields 1 to 16 of random wire types with hostile values (zero, huge,
/// negative, long or control-laden strings, nested messages), sometimes cut short.
fn random_message(rng: &mut StdRng, depth: u32) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..rng.random_range(0..8) {
        let field: u64 = rng.random_range(1..=16);
        match rng.random_range(0..4) {
            0 => {
                varint(&mut out, field << 3);
                let v = match rng.random_range(0..5) {
                    0 => 0,
                    1 => 1,
                    2 => u64::MAX,
                    3 => u64::from(u32::MAX),
                    _ => rng.random(),
                };
                varint(&mut out, v);
            }
            1 => {
                varint(&mut out, (field << 3) | 2);
                let body: Vec<u8> = if depth < 3 && rng.random_bool(0.4) {
                    random_message(rng, depth + 1)
                } else {
                    match rng.random_range(0..4) {
                        0 => b"driver-20261121143000-0000".to_vec(),
                        1 => vec![0; rng.random_range(0..64)],
                        2 => "sh\u{0}\n\u{1b}[2J../../etc/passwd".as_bytes().to_vec(),
                        _ => (0..rng.random_range(0..200))
                            .map(|_| rng.random())
                            .collect(),
                    }
                };
                varint(&mut out, body.len() as u64);
                out.extend(body);
            }
            2 => {
                varint(&mut out, (field << 3) | 5);
                out.extend(rng.random::<u32>().to_le_bytes());
            }
            _ => {
                varint(&mut out, (field << 3) | 1);
                out.extend(rng.random::<u64>().to_le_bytes());
            }
        }
    }
    if rng.random_bool(0.1) && !out.is_empty() {
        let cut = rng.random_range(0..out.len());
        out.truncate(cut);
    }
    out
}

/// One call with `body`: the status the master answered (OK once a first reply came).
async fn call(
    channel: &tonic::transport::Channel,
    secret: &str,
    path: &str,
    body: Vec<u8>,
) -> Status {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.expect("ready");
    let mut request = tonic::Request::new(tokio_stream::once(body));
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {secret}").parse().expect("header"),
    );
    let path: tonic::codegen::http::uri::PathAndQuery = path.parse().expect("path");
    let answer = async {
        match grpc.streaming(request, path, RawCodec).await {
            Ok(response) => match response.into_inner().message().await {
                Err(status) => status,
                Ok(_) => Status::ok(""),
            },
            Err(status) => status,
        }
    };
    match tokio::time::timeout(Duration::from_secs(5), answer).await {
        Ok(status) => status,
        Err(_) => Status::deadline_exceeded("no answer within 5 s"),
    }
}

/// What an admitted driver must be, written out here rather than taken from the master's own
/// validator, so a hole in that validator cannot hide itself.
fn plainly_valid(d: &hearth_common::proto::Driver) -> Result<(), String> {
    let spec = d.spec.as_ref().ok_or("no spec")?;
    let program = spec.command.first().ok_or("no command")?;
    if program.is_empty() || spec.command.iter().any(|a| a.contains('\0')) {
        return Err(format!("command {:?}", spec.command));
    }
    if spec.command.len() > 4096 {
        return Err(format!("{} arguments", spec.command.len()));
    }
    if !(1..=65_536).contains(&spec.cores) || !(1..=(1 << 30)).contains(&spec.memory_mb) {
        return Err(format!("{} cores, {} MiB", spec.cores, spec.memory_mb));
    }
    if spec.max_retries > 100 {
        return Err(format!("max_retries {}", spec.max_retries));
    }
    if spec.name.len() > 256 || spec.name.chars().any(char::is_control) {
        return Err(format!("name {:?}", spec.name));
    }
    for key in &d.env_names {
        let plain = !key.is_empty()
            && !key.starts_with(|c: char| c.is_ascii_digit())
            && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !plain || key.starts_with("HEARTH_") {
            return Err(format!("environment name {key:?}"));
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_and_hostile_messages_to_every_rpc_get_proper_answers_and_change_nothing_wrongly() {
    let mut cluster = Cluster::start();
    let secret = cluster.secret.clone().expect("secret");
    let rpcs = support::every_rpc();
    assert!(rpcs.len() >= 15);
    let mut rng = StdRng::seed_from_u64(0x4ea7_f022);
    let channel = hearth_common::client::channel(&cluster.url, &Default::default())
        .await
        .expect("channel");
    let streaming = support::rpc::streaming_rpcs();
    assert!(
        streaming.iter().any(|p| p.ends_with("/WatchDriver")),
        "{streaming:?}"
    );
    let mut seen = std::collections::BTreeMap::<String, usize>::new();
    for path in &rpcs {
        for n in 0..60 {
            let body = if n % 3 == 0 {
                (0..rng.random_range(0..300))
                    .map(|_| rng.random())
                    .collect()
            } else {
                random_message(&mut rng, 0)
            };
            let status = call(&channel, &secret, path, body.clone()).await;
            let fine = match status.code() {
                // A stream (watching a driver, a worker session) may rightly stay open; a
                // unary call must answer.
                Code::DeadlineExceeded => streaming.contains(path),
                Code::Ok
                | Code::InvalidArgument
                | Code::NotFound
                | Code::FailedPrecondition
                | Code::ResourceExhausted
                | Code::AlreadyExists
                | Code::Unavailable => true,
                _ => false,
            };
            assert!(fine, "{path} with {body:02x?}: {status:?}");
            *seen
                .entry(format!("{path} {:?}", status.code()))
                .or_default() += 1;
        }
    }
    // The edge was really exercised: hostile values got past decoding into validation.
    assert!(
        seen.keys()
            .any(|k| k.starts_with("/hearth.v1.ClientService/SubmitDriver InvalidArgument")),
        "{seen:?}"
    );

    // A body that is no message of the type, and one over the size limit: refused as bad input
    // and as too large, naming the request, not as the server's own failure.
    let submit = "/hearth.v1.ClientService/SubmitDriver";
    let status = call(&channel, &secret, submit, vec![0x0a, 0xff, 0xff]).await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().starts_with("request: not a valid message"),
        "{status:?}"
    );
    let status = call(
        &channel,
        &secret,
        submit,
        vec![b'x'; hearth_common::MAX_MESSAGE_BYTES + 1],
    )
    .await;
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().starts_with("request: too large"),
        "{status:?}"
    );

    // Still up, still answering, and nothing invalid got in.
    assert_eq!(cluster.http_get("/healthz").0, 200);
    let client = cluster.client().await;
    let drivers = client.drivers().await.expect("list drivers");
    for d in &drivers {
        if let Err(why) = plainly_valid(d) {
            panic!("admitted a driver with {why}: {d:?}");
        }
    }
    for w in client.workers().await.expect("list workers") {
        assert!(w.cores >= 1 && w.memory_mb >= 1, "{w:?}");
        assert_ne!(
            w.state,
            hearth_common::proto::WorkerState::Alive as i32,
            "{w:?}"
        );
    }
    let id = cluster.submit(&["--memory", "64m", "--", "true"]);

    // The state it wrote loads again.
    cluster.restart_master(&[]);
    let client = cluster.client().await;
    let after = client.drivers().await.expect("list drivers after restart");
    assert_eq!(after.len(), drivers.len() + 1);
    assert!(after.iter().any(|d| d.id == id));
}

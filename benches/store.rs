//! Micro-benchmarks of the hot path below the network: framing a pipelined batch, the L1
//! store's GET/SET of 100-byte values, a sorted set's ordered index (`zset_*`, shaped like
//! redis-benchmark's `ZADD myzset __rand_int__ element:__rand_int__` with `-r 100000`), its
//! ZPOPMIN and a big hash's HSET (`object/*`, shaped like `HSET myhash element:__rand_int__`
//! with `-d 100`), and writing a score into a reply. The end-to-end comparison with
//! redis-server is `benches/resp.sh`; these isolate regressions in one layer.

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::hint::black_box;
use strata::cache::entry::Entry;
use strata::cache::ranktree::RankTree;
use strata::cache::store::Store;
use strata::cache::value::{HashValue, ZSetValue};
use strata::server::frame::Framer;
use strata::server::reply::Reply;

fn store(c: &mut Criterion) {
    let s = Store::new(1);
    let keys: Vec<Vec<u8>> = (0..100_000)
        .map(|i| format!("key:{i:012}").into_bytes())
        .collect();
    let val = [b'x'; 100];
    for k in &keys {
        s.access(0, k, 0, |slot| slot.put(Entry::new_str(k, &val, None, 0)));
    }
    let mut g = c.benchmark_group("l1");
    g.throughput(Throughput::Elements(1));
    let mut i = 0usize;
    g.bench_function("get_100b", |b| {
        b.iter(|| {
            i = (i + 7919) % keys.len();
            s.read(0, &keys[i], 1, |e| black_box(e.map(|e| e.key().len())))
        })
    });
    g.bench_function("set_100b", |b| {
        b.iter(|| {
            i = (i + 7919) % keys.len();
            let k = &keys[i];
            s.access(0, k, 1, |slot| slot.put(Entry::new_str(k, &val, None, 0)))
        })
    });
    g.finish();
}

fn framing(c: &mut Criterion) {
    let mut batch = Vec::new();
    for i in 0..16 {
        let k = format!("key:{i:012}");
        batch.extend_from_slice(
            format!(
                "*3\r\n$3\r\nSET\r\n${}\r\n{k}\r\n$100\r\n{}\r\n",
                k.len(),
                "x".repeat(100)
            )
            .as_bytes(),
        );
    }
    let mut g = c.benchmark_group("frame");
    g.throughput(Throughput::Elements(16));
    g.bench_function("pipeline_16_sets", |b| {
        b.iter(|| {
            let mut f = Framer::new(512 << 20);
            let mut buf = BytesMut::from(&batch[..]);
            let mut n = 0;
            while let Ok(Some(cmd)) = f.next(&mut buf, true) {
                n += cmd.len();
            }
            black_box(n)
        })
    });
    g.finish();
}

const ZSET_N: usize = 100_000;

/// redis-benchmark's member names: `element:` and 12 digits.
fn element(i: usize) -> [u8; 20] {
    format!("element:{i:012}").into_bytes().try_into().unwrap()
}

/// A 100k-element index with random integer scores below 100 000, and each member's score.
fn zset_100k(rng: &mut StdRng) -> (RankTree, Vec<f64>) {
    let scores: Vec<f64> = (0..ZSET_N)
        .map(|_| rng.random_range(0..ZSET_N) as f64)
        .collect();
    let mut t = RankTree::default();
    for (i, &s) in scores.iter().enumerate() {
        t.insert(s, &element(i));
    }
    (t, scores)
}

/// One score change, with the member's bytes inline: the benches read their operations in
/// order, so the cache misses they measure are the tree's own.
#[derive(Clone, Copy)]
struct Move {
    old: f64,
    new: f64,
    member: [u8; 20],
}

/// 200 000 score changes of random members (`step` gives the new score), then the same undone
/// in reverse order, so that going round the ring leaves the set as it was.
fn ring(rng: &mut StdRng, scores: &[f64], step: impl Fn(&mut StdRng, f64) -> f64) -> Vec<Move> {
    let mut scores = scores.to_vec();
    let mut moves: Vec<Move> = (0..200_000)
        .map(|_| {
            let i = rng.random_range(0..ZSET_N);
            let old = scores[i];
            scores[i] = step(rng, old);
            Move {
                old,
                new: scores[i],
                member: element(i),
            }
        })
        .collect();
    let undo: Vec<Move> = moves
        .iter()
        .rev()
        .map(|m| Move {
            old: m.new,
            new: m.old,
            ..*m
        })
        .collect();
    moves.extend(undo);
    moves
}

fn zset(c: &mut Criterion) {
    let mut rng = StdRng::seed_from_u64(0x9E37_79B9_7F4A_7C15);
    let mut g = c.benchmark_group("zset");
    g.throughput(Throughput::Elements(1));
    // ZADD of an existing member with a random new score (redis-benchmark's ZADD with -r).
    let (mut t, scores) = zset_100k(&mut rng);
    let moves = ring(&mut rng, &scores, |rng, _| {
        rng.random_range(0..ZSET_N) as f64
    });
    let mut k = 0;
    g.bench_function("zset_update_100k", |b| {
        b.iter(|| {
            let m = &moves[k];
            t.update(m.old, m.new, &m.member);
            k = (k + 1) % moves.len();
        })
    });
    // ZINCRBY ±1: the element mostly stays where it is or moves a few places.
    let (mut t, scores) = zset_100k(&mut rng);
    let moves = ring(&mut rng, &scores, |_, s| s + 1.0);
    let mut k = 0;
    g.bench_function("zset_incr_100k", |b| {
        b.iter(|| {
            let m = &moves[k];
            t.update(m.old, m.new, &m.member);
            k = (k + 1) % moves.len();
        })
    });
    // ZRANK of a random member, ZRANGE of one random rank.
    let (t, scores) = zset_100k(&mut rng);
    let probes: Vec<Move> = (0..200_000)
        .map(|_| {
            let i = rng.random_range(0..ZSET_N);
            Move {
                old: scores[i],
                new: scores[i],
                member: element(i),
            }
        })
        .collect();
    let mut k = 0;
    g.bench_function("zset_rank_100k", |b| {
        b.iter(|| {
            let p = &probes[k];
            k = (k + 1) % probes.len();
            black_box(t.rank_of((p.old, &p.member)))
        })
    });
    let ranks: Vec<usize> = (0..200_000).map(|_| rng.random_range(0..ZSET_N)).collect();
    let mut k = 0;
    g.bench_function("zset_get_100k", |b| {
        b.iter(|| {
            k = (k + 1) % ranks.len();
            black_box(t.get(ranks[k]).map(|(s, _)| s))
        })
    });
    drop(t);
    // A sliding window of 100k over 200k names: ZADD a new member at a random score, ZREM
    // the oldest.
    let names: Vec<[u8; 20]> = (0..2 * ZSET_N).map(element).collect();
    let score_of = |id: usize| ((id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 47) as f64;
    let mut t = RankTree::default();
    for (id, name) in names[..ZSET_N].iter().enumerate() {
        t.insert(score_of(id), name);
    }
    let mut oldest = 0usize;
    g.bench_function("zset_insert_remove", |b| {
        b.iter(|| {
            let new = (oldest + ZSET_N) % names.len();
            t.insert(score_of(new), &names[new]);
            t.remove(score_of(oldest), &names[oldest]);
            oldest = (oldest + 1) % names.len();
        })
    });
    g.finish();
}

fn objects(c: &mut Criterion) {
    let mut rng = StdRng::seed_from_u64(0x2545_F491_4F6C_DD1D);
    let mut g = c.benchmark_group("object");
    g.throughput(Throughput::Elements(1));
    // ZPOPMIN of a 100k set with random integer scores; each popped member goes back in at the
    // far end, so the set keeps its size. `zpopmin_by_rank` is the same through the rank API
    // (read rank 0, copy the member, remove it by key).
    let mut z = ZSetValue::default();
    for i in 0..ZSET_N {
        z.insert(&element(i), rng.random_range(0..ZSET_N) as f64);
    }
    let mut top = ZSET_N as f64;
    g.bench_function("zpopmin_100k", |b| {
        b.iter(|| {
            if let Some((_, m)) = z.pop(false) {
                top += 1.0;
                z.insert(&m, top);
            }
        })
    });
    g.bench_function("zpopmin_by_rank_100k", |b| {
        b.iter(|| {
            if let Some((_, m)) = z.at(0).map(|(s, m)| (s, m.to_vec())) {
                z.remove(&m);
                top += 1.0;
                z.insert(&m, top);
            }
        })
    });
    drop(z);
    // HSET of a random existing field of a 100k-field hash: a 100-byte value over a 100-byte
    // one (written in place), and alternately 100 and 101 bytes (a new block each time).
    let mut h = HashValue::default();
    let fields: Vec<[u8; 20]> = (0..ZSET_N).map(element).collect();
    let (v100, v101) = ([b'x'; 100], [b'y'; 101]);
    for f in &fields {
        h.insert(f, &v100);
    }
    let picks: Vec<usize> = (0..200_000).map(|_| rng.random_range(0..ZSET_N)).collect();
    let mut k = 0;
    g.bench_function("hset_same_size_100k", |b| {
        b.iter(|| {
            k = (k + 1) % picks.len();
            black_box(h.insert(&fields[picks[k]], &v100))
        })
    });
    g.bench_function("hset_new_size_100k", |b| {
        b.iter(|| {
            k = (k + 1) % picks.len();
            let v: &[u8] = if k % 2 == 0 { &v100 } else { &v101 };
            black_box(h.insert(&fields[picks[k]], v))
        })
    });
    g.finish();
    // A ZPOPMIN reply's score: integral (redis-benchmark's scores) and fractional.
    let mut g = c.benchmark_group("reply");
    g.throughput(Throughput::Elements(1));
    let mut out = Reply::new(false);
    for (name, v) in [("double_integral", 48_213.0), ("double_fraction", 0.1)] {
        g.bench_function(name, |b| {
            b.iter(|| {
                out.buf.clear();
                out.double(black_box(v));
            })
        });
    }
    g.finish();
}

criterion_group!(benches, store, framing, zset, objects);
criterion_main!(benches);

use rnn::*;
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let cell = match args[1].as_str() { "lstm" => CellKind::Lstm, "gru" => CellKind::Gru, _ => CellKind::Rnn };
    let (h, n, t): (usize, usize, usize) = (args[2].parse().unwrap(), args[3].parse().unwrap(), args[4].parse().unwrap());
    let input_size: usize = std::env::var("INPUT").ok().and_then(|v| v.parse().ok()).unwrap_or(h);
    let cfg = Config::builder(cell, input_size, h).build().unwrap();
    let flops = cfg.forward_flops(t, n) as f64;
    let model = Model::random(cfg, 1);
    let x = rng::SplitMix64::new(2).uniform_vec(t * n * input_size, -1.0, 1.0);
    let input = Input::new(&x, t, n);
    model.forward_inference(&input).unwrap();
    let reps = if args.len() > 5 { 30 } else { 5 };
    let s = std::time::Instant::now();
    for _ in 0..reps { std::hint::black_box(model.forward_inference(&input).unwrap()); }
    let inf = s.elapsed().as_secs_f64() / reps as f64;
    if args.len() > 5 { println!("inference {:.1} GFLOP/s", flops/inf/1e9); return; }
    let s = std::time::Instant::now();
    for _ in 0..reps { let (o, tr) = model.forward_training(&input).unwrap(); let dy = vec![1.0; o.y.len()]; std::hint::black_box(model.backward(&tr, &OutputGrads::new(&dy)).unwrap()); }
    let tr = s.elapsed().as_secs_f64() / reps as f64;
    println!("{:?} H{h} N{n} T{t}: inference {:.2} ms {:.1} GFLOP/s | training {:.2} ms {:.1} GFLOP/s", cell, inf*1e3, flops/inf/1e9, tr*1e3, 3.0*flops/tr/1e9);
}

//! Embedding the tsdb in a Rust program: write a day of readings from three
//! rooms, then ask for hourly averages per room.
//!
//! `cargo run --example tsdb_embed -- /tmp/tsdb-example`

use edgebox::roles::tsdb::db::{Aggregate, Db, Func, Point};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let dir = std::env::args().nth(1).unwrap_or_else(|| "tsdb-example".into());
    let db = Db::open(std::path::Path::new(&dir))?;
    let day_start = 1_700_000_000_000 / 86_400_000 * 86_400_000;
    let mut points = Vec::new();
    for minute in 0..24 * 60 {
        for (room, base) in [("kitchen", 21.0), ("hall", 17.5), ("attic", 12.0)] {
            let swing = ((minute as f64) / 1440.0 * std::f64::consts::TAU).sin() * 3.0;
            points.push(Point {
                metric: "temperature_celsius".into(),
                ts: day_start + minute * 60_000,
                value: ((base + swing) * 10.0).round() / 10.0,
                tags: vec![("room".into(), room.into())],
            });
        }
    }
    let written = db.write_batch(&points).await?;
    println!("wrote {written} samples to {dir}");

    let hourly = Aggregate::new("temperature_celsius", Func::Avg, day_start, day_start + 86_400_000 - 1)
        .group_by("room")
        .step(3_600_000);
    for row in db.aggregate(&hourly).await? {
        let room = &row.tags[0].1;
        let temps: Vec<String> = row.points.iter().map(|(_, v)| format!("{v:.1}")).collect();
        println!("{room:>8}: {}", temps.join(" "));
    }
    let peak = db
        .aggregate(
            &Aggregate::new("temperature_celsius", Func::Max, day_start, day_start + 86_400_000 - 1)
                .filter("room", "kitchen"),
        )
        .await?;
    println!("kitchen peak: {:.1} °C", peak[0].points[0].1);
    Ok(())
}

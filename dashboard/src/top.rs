//! `cluster top`: the dashboard's numbers in the terminal, redrawn every second.
//!
//! [`draw`] is a pure function of a [`Snapshot`] onto a ratatui frame (the tests render it
//! to a `TestBackend` buffer); [`run`] owns the terminal and the keys (`q`, Esc or Ctrl-C
//! quit).

use crate::poller::Poller;
use crate::snapshot::Snapshot;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Block, Borders, Paragraph, Row, Sparkline, Table};
use ratatui::Frame;
use std::time::Duration;

/// Draws one snapshot.
pub fn draw(frame: &mut Frame, s: &Snapshot) {
    let failures = s.feed.failures.len().min(5) as u16;
    let [head, charts, table, lists] = Layout::vertical([
        Constraint::Length(4),
        Constraint::Length(5),
        Constraint::Min(3),
        Constraint::Length(2 + failures.max(1) + s.feed.maps.len().min(3) as u16),
    ])
    .areas(frame.area());

    let controller = match (&s.controller, s.connected) {
        (Some(c), true) => format!(
            "controller {}:{} up {:.0}s  scheduler {}  clients {}",
            c.host, c.pid, c.uptime_s, c.scheduler, c.clients
        ),
        (_, _) => format!(
            "controller unreachable: {}",
            s.error.as_deref().unwrap_or("?")
        ),
    };
    let t = &s.tasks;
    let alive = s.engines.iter().filter(|e| e.state == "alive").count();
    let counts = format!(
        "engines {} ({alive} alive)  tasks: queued {}  waiting {}  running {}  done {}  failed {}  |  {:.1} tasks/s",
        s.engines.len(),
        t.queued,
        t.waiting,
        t.running,
        t.done,
        t.failed,
        s.throughput()
    );
    frame.render_widget(
        Paragraph::new(vec![Line::from(controller), Line::from(counts)]).block(
            Block::default()
                .borders(Borders::ALL)
                .title(" cluster top (q quits) "),
        ),
        head,
    );

    let [left, right] =
        Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(charts);
    let rate: Vec<u64> = s
        .history
        .iter()
        .map(|p| (p.done_per_s + p.failed_per_s).round() as u64)
        .collect();
    let queued: Vec<u64> = s.history.iter().map(|p| p.queued).collect();
    // The newest points at the right edge: a sparkline draws from the left.
    let tail = |v: &[u64], width: u16| {
        v[v.len().saturating_sub(usize::from(width)).min(v.len())..].to_vec()
    };
    let (rate, queued) = (
        tail(&rate, left.width.saturating_sub(2)),
        tail(&queued, right.width.saturating_sub(2)),
    );
    frame.render_widget(
        Sparkline::default()
            .block(
                Block::default()
                    .borders(Borders::ALL)
                    .title(format!(" throughput {:.0}/s ", s.throughput())),
            )
            .data(&rate),
        left,
    );
    frame.render_widget(
        Sparkline::default()
            .block(
                Block::default()
                    .borders(Borders::ALL)
                    .title(format!(" queue depth {} ", t.queued)),
            )
            .data(&queued),
        right,
    );

    let rows = s.engines.iter().map(|e| {
        Row::new(vec![
            e.id.to_string(),
            e.host.clone(),
            e.pid.to_string(),
            e.state.clone(),
            e.outstanding.to_string(),
            e.done.to_string(),
            e.failed.to_string(),
            e.hwm.to_string(),
            e.cpu_percent.map_or(String::new(), |c| format!("{c:.1}")),
            e.rss_bytes.map_or(String::new(), |b| {
                format!("{:.1}M", b as f64 / f64::from(1 << 20))
            }),
        ])
    });
    let widths = [
        Constraint::Length(6),
        Constraint::Min(10),
        Constraint::Length(8),
        Constraint::Length(13),
        Constraint::Length(11),
        Constraint::Length(10),
        Constraint::Length(8),
        Constraint::Length(5),
        Constraint::Length(6),
        Constraint::Length(9),
    ];
    frame.render_widget(
        Table::new(rows, widths)
            .header(
                Row::new(vec![
                    "id",
                    "host",
                    "pid",
                    "state",
                    "outstanding",
                    "done",
                    "failed",
                    "hwm",
                    "cpu%",
                    "rss",
                ])
                .style(Style::default().add_modifier(Modifier::BOLD)),
            )
            .block(Block::default().borders(Borders::ALL).title(" engines ")),
        table,
    );

    // Maps in flight, then the newest failures with their messages.
    let mut lines: Vec<Line> = s
        .feed
        .maps
        .iter()
        .take(3)
        .map(|m| {
            Line::from(format!(
                "map {} (client {}): {}/{} done",
                m.function, m.client, m.done, m.total
            ))
        })
        .collect();
    for f in s.feed.failures.iter().take(5) {
        let engine = f.engine.map_or("-".to_owned(), |e| e.to_string());
        let message = f.message.lines().next().unwrap_or("");
        lines.push(
            Line::from(format!(
                "task {} {} on engine {engine}: {}: {message}",
                f.task, f.function, f.kind
            ))
            .style(Style::default().fg(ratatui::style::Color::Red)),
        );
    }
    if s.feed.failures.is_empty() {
        lines.push(Line::from(if s.feed.live {
            "no failures"
        } else {
            "no activity feed from the controller (events = false?)"
        }));
    }
    let title = format!(" maps and failures ({} failed so far) ", s.tasks.failed);
    frame.render_widget(
        Paragraph::new(lines).block(Block::default().borders(Borders::ALL).title(title)),
        lists,
    );
}

/// Runs `cluster top` on the terminal until `q`.
pub fn run(poller: &Poller) -> std::io::Result<()> {
    let mut terminal = ratatui::init();
    let result = (|| -> std::io::Result<()> {
        loop {
            let snapshot = poller.latest();
            terminal.draw(|f| draw(f, &snapshot))?;
            // Wake at least every 250 ms: a new snapshot shows within a second.
            if event::poll(Duration::from_millis(250))? {
                if let Event::Key(key) = event::read()? {
                    let ctrl_c = key.code == KeyCode::Char('c')
                        && key.modifiers.contains(KeyModifiers::CONTROL);
                    if key.kind == KeyEventKind::Press
                        && (matches!(key.code, KeyCode::Char('q') | KeyCode::Esc) || ctrl_c)
                    {
                        return Ok(());
                    }
                }
            }
        }
    })();
    ratatui::restore();
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::tests::{queue, report};
    use crate::snapshot::History;
    use ratatui::backend::TestBackend;
    use ratatui::Terminal;

    fn screen(s: &Snapshot) -> String {
        let mut terminal = Terminal::new(TestBackend::new(120, 30)).unwrap();
        terminal.draw(|f| draw(f, s)).unwrap();
        let buffer = terminal.backend().buffer();
        let mut text = String::new();
        for y in 0..buffer.area.height {
            for x in 0..buffer.area.width {
                text.push_str(buffer[(x, y)].symbol());
            }
            text.push('\n');
        }
        text
    }

    #[test]
    fn shows_engines_counts_and_rate() {
        let mut h = History::new();
        h.on_poll(1.0, &report(3, 1, 100, 0), &queue(3));
        let s = h.on_poll(2.0, &report(3, 1, 150, 1), &queue(3));
        let text = screen(&s);
        assert!(text.contains("engines 3 (3 alive)"), "{text}");
        assert!(text.contains("done 150"), "{text}");
        assert!(text.contains("51.0 tasks/s"), "{text}");
        assert!(text.contains("node2"), "{text}");
        assert!(text.contains("1002"), "{text}");
    }

    #[test]
    fn shows_cpu_memory_maps_and_failures() {
        use crate::feed::Feed;
        use protocol::{
            ClientId, EngineUsage, ErrorKind, MapProgress, Notification, TaskFailure, TaskId,
            TaskStats,
        };
        let mut h = History::new();
        let mut status = report(2, 1, 10, 1);
        status.engines[0].usage = Some(EngineUsage {
            cpu_percent: 37.5,
            rss_bytes: 12 << 20,
        });
        let mut s = h.on_poll(1.0, &status, &queue(2));
        let mut feed = Feed::new();
        feed.on_notification(
            1.0,
            Notification::TaskStats(Box::new(TaskStats {
                maps: vec![MapProgress {
                    client: ClientId(4),
                    function: "nth_prime".into(),
                    total: 100,
                    done: 40,
                    since_us: 0,
                }],
                ..TaskStats::default()
            })),
        );
        feed.on_notification(
            1.0,
            Notification::Failures {
                failures: vec![TaskFailure {
                    id: TaskId::new(ClientId(4), 7),
                    engine: Some(protocol::EngineId(1)),
                    function: "nth_prime".into(),
                    kind: ErrorKind::Remote,
                    message: "index out of range".into(),
                    time_us: 0,
                }],
                unlisted: 0,
            },
        );
        s.feed = feed.view(1.0);
        let text = screen(&s);
        assert!(text.contains("37.5"), "{text}");
        assert!(text.contains("12.0M"), "{text}");
        assert!(
            text.contains("map nth_prime (client 4): 40/100 done"),
            "{text}"
        );
        assert!(text.contains("task 4:7 nth_prime on engine 1"), "{text}");
        assert!(text.contains("index out of range"), "{text}");
    }

    #[test]
    fn says_when_the_controller_is_unreachable() {
        let mut h = History::new();
        h.on_poll(1.0, &report(1, 1, 0, 0), &queue(1));
        let s = h.on_error(2.0, "cannot reach the controller".into());
        let text = screen(&s);
        assert!(
            text.contains("controller unreachable: cannot reach"),
            "{text}"
        );
        assert!(text.contains("node0"), "{text}");
    }
}

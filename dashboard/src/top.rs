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
    let [head, charts, table] = Layout::vertical([
        Constraint::Length(4),
        Constraint::Length(5),
        Constraint::Min(3),
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
                ])
                .style(Style::default().add_modifier(Modifier::BOLD)),
            )
            .block(Block::default().borders(Borders::ALL).title(" engines ")),
        table,
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

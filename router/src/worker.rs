//! The one pattern the data planes' threads share (the userspace engine
//! and the fast datapath): a thread that owns its state, takes commands
//! from any thread through a mailbox whose wake socket its poll loop
//! watches, and is stopped and joined when its handle is dropped.

use std::{
    io,
    os::{
        fd::{AsRawFd, RawFd},
        unix::net::UnixDatagram,
    },
    sync::{Arc, mpsc},
    thread,
    time::{Duration, Instant},
};

/// Gives a worker commands, from any thread.
pub struct Sender<C> {
    commands: mpsc::Sender<C>,
    wake: Arc<UnixDatagram>,
}

impl<C> Clone for Sender<C> {
    fn clone(&self) -> Self {
        Sender {
            commands: self.commands.clone(),
            wake: self.wake.clone(),
        }
    }
}

impl<C> Sender<C> {
    /// Queues `command` and wakes the worker; a worker that is gone drops
    /// it.
    pub fn send(&self, command: C) {
        if self.commands.send(command).is_ok() {
            // A full wake socket already has a wake-up pending.
            let _ = self.wake.send(&[1]);
        }
    }
}

/// The worker's end: a descriptor to poll and the commands queued.
pub struct Mailbox<C> {
    commands: mpsc::Receiver<C>,
    wake: UnixDatagram,
}

impl<C> Mailbox<C> {
    /// Readable when commands wait.
    pub fn fd(&self) -> RawFd {
        self.wake.as_raw_fd()
    }

    /// The next queued command. Only when the queue looks empty are the
    /// wake-ups consumed (no system call per command), and the queue is
    /// looked at once more after that: a command sent meanwhile is taken
    /// now, and one sent later leaves its wake-up for the next poll.
    pub fn next(&self) -> Option<C> {
        if let Ok(command) = self.commands.try_recv() {
            return Some(command);
        }
        let mut drain = [0u8; 64];
        while self.wake.recv(&mut drain).is_ok() {}
        self.commands.try_recv().ok()
    }
}

/// A new mailbox and the sender for it.
pub fn mailbox<C>() -> io::Result<(Sender<C>, Mailbox<C>)> {
    let (wake, wake_rx) = UnixDatagram::pair()?;
    wake.set_nonblocking(true)?;
    wake_rx.set_nonblocking(true)?;
    let (commands, commands_rx) = mpsc::channel();
    Ok((
        Sender {
            commands,
            wake: Arc::new(wake),
        },
        Mailbox {
            commands: commands_rx,
            wake: wake_rx,
        },
    ))
}

/// A running worker thread; dropping it sends `stop` and joins it.
pub struct Worker<C> {
    sender: Sender<C>,
    stop: fn() -> C,
    thread: Option<thread::JoinHandle<()>>,
}

impl<C> Worker<C> {
    /// Runs `body` on a thread called `name`; `sender` reaches its mailbox.
    pub fn spawn(
        name: &str,
        sender: Sender<C>,
        stop: fn() -> C,
        body: impl FnOnce() + Send + 'static,
    ) -> io::Result<Worker<C>> {
        let thread = thread::Builder::new().name(name.into()).spawn(body)?;
        Ok(Worker {
            sender,
            stop,
            thread: Some(thread),
        })
    }

    pub fn send(&self, command: C) {
        self.sender.send(command)
    }

    pub fn sender(&self) -> Sender<C> {
        self.sender.clone()
    }
}

impl<C> Drop for Worker<C> {
    fn drop(&mut self) {
        self.send((self.stop)());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Waits until one of `fds` is readable (their `revents` say which) or
/// `deadline` passes, at most a second: a worker's loop looks at its
/// timers at least that often.
pub fn poll(fds: &mut [libc::pollfd], now: Instant, deadline: Instant) -> io::Result<()> {
    let timeout = deadline
        .saturating_duration_since(now)
        .min(Duration::from_secs(1))
        .as_millis()
        .max(1) as libc::c_int;
    // SAFETY: polls descriptors the caller owns, through a slice of
    // pollfd structs with its true length.
    let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
    if ready < 0 {
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    Ok(())
}

/// A pollfd asking whether `fd` is readable.
pub fn readable(fd: RawFd) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    enum Cmd {
        Add(usize),
        Stop,
    }

    /// A worker's loop as the data planes run it: poll the mailbox, take
    /// every command, end on Stop; dropping the handle stops and joins it.
    #[test]
    fn commands_wake_the_loop_and_dropping_the_handle_joins_it() {
        let total = Arc::new(AtomicUsize::new(0));
        let (sender, mailbox) = mailbox::<Cmd>().unwrap();
        let seen = total.clone();
        let worker = Worker::spawn(
            "weft-test-worker",
            sender,
            || Cmd::Stop,
            move || {
                loop {
                    let mut fds = [readable(mailbox.fd())];
                    let now = Instant::now();
                    poll(&mut fds, now, now + Duration::from_secs(60)).unwrap();
                    while let Some(cmd) = mailbox.next() {
                        match cmd {
                            Cmd::Add(n) => {
                                seen.fetch_add(n, Ordering::SeqCst);
                            }
                            Cmd::Stop => return,
                        }
                    }
                }
            },
        )
        .unwrap();
        let other = worker.sender();
        let from_thread =
            std::thread::spawn(move || (1..=100).for_each(|n| other.send(Cmd::Add(n))));
        from_thread.join().unwrap();
        worker.send(Cmd::Add(1000));
        drop(worker);
        // Joined: everything sent before the stop was taken.
        assert_eq!(total.load(Ordering::SeqCst), 5050 + 1000);
    }

    #[test]
    fn a_poll_ends_by_its_deadline_without_events() {
        let (_sender, mailbox) = mailbox::<()>().unwrap();
        let mut fds = [readable(mailbox.fd())];
        let now = Instant::now();
        poll(&mut fds, now, now + Duration::from_millis(5)).unwrap();
        assert_eq!(fds[0].revents, 0);
        assert!(mailbox.next().is_none());
    }
}

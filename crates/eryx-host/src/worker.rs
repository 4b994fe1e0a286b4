//! A thread with a big stack that runs borrowed work for its owner, one job at a time, and
//! lives as long as the owner: a sandbox's calls into the guest run there (see
//! [`crate::engine::GUEST_THREAD_STACK`]) without paying for a new thread on every call.

use std::any::Any;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::thread::JoinHandle;

type Job = Box<dyn FnOnce() + Send + 'static>;

pub(crate) struct Worker {
    jobs: Option<Sender<Job>>,
    done: Receiver<Result<(), Box<dyn Any + Send>>>,
    thread: Option<JoinHandle<()>>,
}

impl Worker {
    pub(crate) fn new(name: &str, stack_size: usize) -> std::io::Result<Worker> {
        let (jobs, incoming) = channel::<Job>();
        let (finished, done) = channel();
        let thread = std::thread::Builder::new().name(name.to_owned()).stack_size(stack_size).spawn(move || {
            for job in incoming {
                let outcome = catch_unwind(AssertUnwindSafe(job));
                if finished.send(outcome).is_err() {
                    break;
                }
            }
        })?;
        Ok(Worker { jobs: Some(jobs), done, thread: Some(thread) })
    }

    /// Runs `job` on the worker's thread and waits for it; a panic in it is resumed here.
    pub(crate) fn run<R: Send>(&self, job: impl FnOnce() -> R + Send) -> R {
        let mut result: Option<R> = None;
        {
            let slot = &mut result;
            let borrowed: Box<dyn FnOnce() + Send + '_> = Box::new(move || *slot = Some(job()));
            // SAFETY: the job borrows from this frame (`result`, and whatever `job` borrows).
            // It is erased to `'static` only to cross the channel: this function does not
            // return before the worker reports the job finished (or unwound), so nothing it
            // borrows is used after it is gone. The worker runs one job at a time, and `&self`
            // cannot be shared across threads while a job runs (`Worker` is not `Sync`).
            let job: Job = unsafe { std::mem::transmute::<Box<dyn FnOnce() + Send + '_>, Job>(borrowed) };
            self.jobs.as_ref().expect("the worker is running").send(job).expect("the worker thread is alive");
            match self.done.recv().expect("the worker thread is alive") {
                Ok(()) => {}
                Err(panic) => resume_unwind(panic),
            }
        }
        result.expect("a finished job left its result")
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        // Closing the channel ends the thread's loop.
        self.jobs.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_borrow_from_the_caller_and_run_on_the_big_stack() {
        let worker = Worker::new("test worker", 16 << 20).unwrap();
        let mut values = vec![1, 2, 3];
        let sum = worker.run(|| {
            values.push(4);
            // Deeper than a 2 MiB test thread could go.
            fn depth(n: u64) -> u64 {
                let padding = [n; 64];
                if n == 0 { padding[0] } else { depth(n - 1) + std::hint::black_box(padding)[1] - n + 1 }
            }
            depth(5_000) + values.iter().sum::<u64>()
        });
        assert_eq!(sum, 5_000 + 10);
        assert_eq!(values, [1, 2, 3, 4]);
        assert_ne!(worker.run(|| std::thread::current().id()), std::thread::current().id());
    }

    #[test]
    fn a_panic_in_a_job_reaches_the_caller_and_the_worker_goes_on() {
        let worker = Worker::new("test worker", 1 << 20).unwrap();
        let caught = catch_unwind(AssertUnwindSafe(|| worker.run(|| panic!("inside"))));
        assert!(caught.is_err());
        assert_eq!(worker.run(|| 7), 7);
    }
}

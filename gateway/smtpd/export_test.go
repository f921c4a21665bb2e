package smtpd

// WorkerCounts reports how many worker goroutines s has started in all,
// how many are alive and how many are waiting for a connection.
func WorkerCounts(s *Server) (started, alive, waiting int64) {
	return s.workersStarted.Load(), s.workersAlive.Load(), s.workersWaiting.Load()
}

// WorkerLinger is workerLinger, for tests.
const WorkerLinger = workerLinger

package cli

import "context"

// runCoordinator reports that this build has no coordinator server.
// NOTE: the coordinator package is not in the tree yet. Replace this file
// with the command that loads coordinator/config and runs coordinator.Server.
func (a *App) runCoordinator(_ context.Context, _ []string) int {
	return a.errorf("this dtf build has no coordinator server yet")
}

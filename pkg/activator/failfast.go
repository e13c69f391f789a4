package activator

import (
	"k8s.io/apimachinery/pkg/types"

	"github.com/thaw-dev/thaw/pkg/activator/revisions"
)

// Waiters is what FailIfCannotStart needs of the Throttler.
type Waiters interface {
	Routable(types.NamespacedName) bool
	FailWaiting(types.NamespacedName, error)
}

// FailIfCannotStart ends the requests buffered for i's revision with a CannotStartError (503, the
// reason and Retry-After) when the revision cannot start and has no routable pod here, and reports
// whether it did. Call it on every Revision update (revisions.Store.OnUpsert): the Revision is the only
// place the activator may read why pods cannot start (Info.CannotStart), and its update is the moment
// the buffered requests learn it, instead of at their timeout.
func FailIfCannotStart(w Waiters, i *revisions.Info) bool {
	if i.CannotStart == "" || w.Routable(i.ID) {
		return false
	}
	w.FailWaiting(i.ID, &CannotStartError{Revision: i.ID, Reason: i.CannotStart})
	return true
}

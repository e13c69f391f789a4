package runner

import (
	"context"
	"errors"
	"net"
	"time"

	"github.com/thaw-dev/thaw/pkg/experiment/coldstart/measure"
	"github.com/thaw-dev/thaw/pkg/experiment/coldstart/report"
)

// readyWait bounds the wait at the end of a side for the pod watch to see the last pods Ready (the
// kubelet's readiness probe of queue-proxy runs every 10 s by default; the activator routes on its own
// probe well before that).
const readyWait = 25 * time.Second

// collect completes the samples of one round from the other sources: the /scale patch (audit log, else
// the Deployment watch), the serving pod's queue-proxy start and Ready, and Thaw's timeline.
func (r *run) collect(ctx context.Context, fs []fired) []report.Sample {
	var evs []measure.ScaleEvent
	if r.audit != nil {
		var err error
		if evs, err = r.audit.Read(); err != nil {
			r.progress("audit log unreadable (%v): using the Deployment watch from now on", err)
			r.audit = nil
		}
	}
	var recs []measure.ScaleRecord
	recsErr := error(nil)
	for _, f := range fs {
		if f.header != "" {
			recs, recsErr = measure.ScaleRecords(ctx, r.o.Client.Kube, systemNamespace)
			break
		}
	}
	if recsErr != nil && !errors.Is(recsErr, measure.ErrNoDebugEndpoint) {
		r.progress("autoscaler timings unavailable: %v", recsErr)
	}
	out := make([]report.Sample, len(fs))
	for i := range fs {
		f := &fs[i]
		s := &f.sample
		if ev, ok := measure.FirstScaleUp(evs, r.o.Namespace, f.svc.deployment(), s.Send); ok {
			s.Scale, s.ScaleReceived, s.ScaleSource = ev.Completed, ev.Received, "audit"
		} else if t, ok := r.watch.ScaleUp(f.svc.deployment(), s.Send); ok {
			s.Scale, s.ScaleSource = t, "watch"
		}
		if f.header != "" {
			s.Thaw = thawTimes(f.header, recs, r.o.Namespace, s)
		}
		r.servingPod(ctx, f)
		out[i] = *s
	}
	return out
}

// fillReady sets PodReady of the samples whose pod the watch has seen Ready since they were collected.
func (r *run) fillReady(samples []report.Sample) {
	for i := range samples {
		s := &samples[i]
		if s.Pod != "" && s.PodReady.IsZero() {
			s.PodReady = r.watch.ReadyAt(s.Revision, s.Pod)
		}
	}
}

// waitReady waits (bounded) until every sample's pod has been seen Ready, then fills PodReady.
func (r *run) waitReady(ctx context.Context, samples []report.Sample) {
	ctx, cancel := context.WithTimeout(ctx, readyWait)
	defer cancel()
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		r.fillReady(samples)
		all := true
		for i := range samples {
			all = all && (samples[i].Pod == "" || !samples[i].PodReady.IsZero())
		}
		if all {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// servingPod picks the pod that served the request (the one the activator names, else the first
// queue-proxy to start among the revision's new pods) and reads its queue-proxy start and Ready.
func (r *run) servingPod(ctx context.Context, f *fired) {
	s := &f.sample
	pods := r.watch.PodsSince(f.svc.Revision, s.Send)
	podIP := ""
	if s.Thaw != nil && s.Thaw.Pod != "" {
		podIP, _, _ = net.SplitHostPort(s.Thaw.Pod)
	}
	for _, p := range pods {
		if podIP != "" && p.IP != podIP {
			continue
		}
		t, _, err := measure.FirstLogLine(ctx, r.o.Client.Kube, r.o.Namespace, p.Name, measure.QueueProxy)
		if err != nil {
			continue
		}
		if s.QPUp.IsZero() || t.Before(s.QPUp) {
			s.Pod, s.QPUp, s.PodReady = p.Name, t, p.Ready
		}
	}
}

// thawTimes joins Thaw's activator header and the autoscaler's record of the same cold start.
func thawTimes(header string, recs []measure.ScaleRecord, ns string, s *report.Sample) *report.ThawTimes {
	tt := &report.ThawTimes{Header: header}
	tl, warm, err := measure.ParseHeader(header)
	if err != nil {
		return tt
	}
	tt.Warm = warm
	if warm {
		return tt
	}
	tt.Arrival, tt.PokeSent, tt.PodReady, tt.FirstByte, tt.Pod = tl.Arrival, tl.PokeSent, tl.PodReady, tl.FirstByte, tl.Pod
	end := s.FirstByte
	if end.IsZero() {
		end = s.Send.Add(time.Hour)
	}
	if rec, ok := measure.MatchScaleRecord(recs, ns, s.Revision, s.Send.Add(-time.Second), end); ok {
		tt.PokeReceived, tt.Decided, tt.ScaleWritten = rec.PokeReceived, rec.Decided, rec.ScaleWritten
	}
	return tt
}

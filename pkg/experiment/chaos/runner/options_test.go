package runner

import (
	"strings"
	"testing"
	"time"

	"github.com/thaw-dev/thaw/pkg/experiment/chaos/fault"
	"github.com/thaw-dev/thaw/pkg/experiment/chaos/load"
	"github.com/thaw-dev/thaw/pkg/lab/kube"
	"github.com/thaw-dev/thaw/pkg/lab/proc"
	"github.com/thaw-dev/thaw/pkg/lab/swap"
)

func TestValidate(t *testing.T) {
	cutoff, _ := ScenarioByName("autoscaler-cutoff")
	kill, _ := ScenarioByName("autoscaler-kill")
	outage, _ := ScenarioByName("apiserver-outage")
	loss, _ := ScenarioByName("network-loss")
	delay, _ := ScenarioByName("network-delay")
	injected, _ := ScenarioByName("injected")
	good := func() Options {
		return Options{Client: &kube.Client{}, Namespace: "chaos", Image: "app", Ingress: "10.88.0.1:80",
			Scenarios: []Scenario{kill}, Duration: time.Minute, Period: 20 * time.Second, Rate: 10, ColdServices: 6,
			ColdEvery: 5 * time.Second, Timeout: time.Minute, Sides: []Side{{Name: "thaw"}}}
	}
	for _, tc := range []struct {
		name    string
		mod     func(*Options)
		wantErr string
	}{
		{name: "valid", mod: func(*Options) {}},
		{name: "the cut-off needs the lab's node", mod: func(o *Options) { o.Scenarios = []Scenario{cutoff} }, wantErr: "needs the lab"},
		{name: "the cut-off on the lab", mod: func(o *Options) {
			o.Scenarios = []Scenario{cutoff}
			o.Containerd = &fault.Containerd{}
			o.Hold = 30 * time.Second
		}},
		{name: "the apiserver outage needs the lab's daemons", mod: func(o *Options) { o.Scenarios = []Scenario{outage} }, wantErr: "needs the lab"},
		{name: "the apiserver outage needs a hold", mod: func(o *Options) {
			o.Scenarios = []Scenario{outage}
			o.Daemons = &proc.Manager{}
		}, wantErr: "positive hold"},
		{name: "the apiserver outage on the lab", mod: func(o *Options) {
			o.Scenarios = []Scenario{outage}
			o.Daemons = &proc.Manager{}
			o.Hold = 10 * time.Second
		}},
		{name: "network loss needs a share", mod: func(o *Options) {
			o.Scenarios = []Scenario{loss}
			o.Containerd = &fault.Containerd{}
			o.Hold = 10 * time.Second
			o.Loss = 1.5
		}, wantErr: "between 0 and 1"},
		{name: "network delay needs the lab's node", mod: func(o *Options) {
			o.Scenarios = []Scenario{delay}
			o.Hold = 10 * time.Second
			o.Delay = 100 * time.Millisecond
		}, wantErr: "needs the lab"},
		{name: "network delay needs a delay", mod: func(o *Options) {
			o.Scenarios = []Scenario{delay}
			o.Containerd = &fault.Containerd{}
			o.Hold = 10 * time.Second
		}, wantErr: "network-delay: delay 0s"},
		{name: "network delay past its bound", mod: func(o *Options) {
			o.Scenarios = []Scenario{delay}
			o.Containerd = &fault.Containerd{}
			o.Hold = 10 * time.Second
			o.Delay = time.Minute
		}, wantErr: "at most"},
		{name: "network delay on the lab", mod: func(o *Options) {
			o.Scenarios = []Scenario{delay}
			o.Containerd = &fault.Containerd{}
			o.Hold = 10 * time.Second
			o.Delay = 100 * time.Millisecond
		}},
		{name: "injected needs faults", mod: func(o *Options) {
			o.Scenarios = []Scenario{injected}
			o.Hold = 10 * time.Second
		}, wantErr: "no fault"},
		{name: "injected with a bad value", mod: func(o *Options) {
			o.Scenarios = []Scenario{injected}
			o.Hold = 10 * time.Second
			o.Inject = map[string]string{"activator.pod-latency": "delay=0s"}
		}, wantErr: "delay"},
		{name: "injected", mod: func(o *Options) {
			o.Scenarios = []Scenario{injected}
			o.Hold = 10 * time.Second
			o.Inject = map[string]string{"activator.pod-latency": "delay=100ms"}
		}},
		{name: "no scenario", mod: func(o *Options) { o.Scenarios = nil }, wantErr: "no scenario"},
		{name: "a side to swap in without a swap", mod: func(o *Options) { o.Sides = []Side{{Name: "thaw", Images: swap.Images{}}} }, wantErr: "no way to swap"},
		{name: "zero duration", mod: func(o *Options) { o.Duration = 0 }, wantErr: "must be positive"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := good()
			tc.mod(&o)
			err := o.validate()
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("validate() = %v, want %q", err, tc.wantErr)
			}
		})
	}
}

func TestScenarios(t *testing.T) {
	for _, s := range Scenarios {
		got, ok := ScenarioByName(s.Name)
		if !ok || got.Name != s.Name || s.SLO <= 0 || s.SLO > 1 || s.Help == "" {
			t.Errorf("scenario %q: %+v %v", s.Name, got, ok)
		}
		// Every scenario has a fault (the lab's ones given what they need).
		r := &run{o: Options{Client: &kube.Client{}, Containerd: &fault.Containerd{}, Daemons: &proc.Manager{}, Period: 20 * time.Second, Loss: 0.1},
			doomed: &load.Target{Name: "never"}}
		if inj, err := r.injector(s); err != nil || inj == nil {
			t.Errorf("scenario %q has no fault: %v", s.Name, err)
		}
	}
	if _, ok := ScenarioByName("no-such-fault"); ok {
		t.Error("an unknown scenario was found")
	}
}

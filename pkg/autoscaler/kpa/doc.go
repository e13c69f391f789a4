// Wiring (cmd/autoscaler), in outline:
//
//	pods := kubeinformers.NewSharedInformerFactoryWithOptions(kube, 0,
//		kubeinformers.WithTweakListOptions(func(o *metav1.ListOptions) {
//			o.LabelSelector = "serving.knative.dev/revisionUID" // exists
//		})).Core().V1().Pods()
//	ms := multiscaler.New(multiscaler.Options{Metrics: coll,
//		Pods: multiscaler.PodCounterFunc(kpa.ReadyPodCounter(pods.Lister())), ...})
//	r, err := kpa.New(kpa.Deps{ServingClient: sc, NetworkingClient: nc,
//		PodAutoscalers: sf.Autoscaling().V1alpha1().PodAutoscalers(),
//		Metrics: sf.Autoscaling().V1alpha1().Metrics(),
//		SKSs: nf.Networking().V1alpha1().ServerlessServices(),
//		Pods: pods.Informer(),
//		Scales: kpa.DeploymentScales{Dynamic: dyn, Deployments: kf.Apps().V1().Deployments().Lister()},
//		Deciders: ms, Config: asStore.Load, DeploymentConfig: depStore.Load,
//		Recorder: recorder, Logger: logger})
//	ms.Watch(r.Enqueue)                        // decider changes reconcile the PA
//	asStore.OnChange(func(*asconfig.Config) { r.ResyncAll() })
//	registry.MustRegister(r)                   // kn_revision_pods_* gauges
//	// start the informer factories, then:
//	go r.Run(ctx, workers)
//
// The Deployment informer must be started too (Scales reads spec.replicas
// from its lister).

package kpa

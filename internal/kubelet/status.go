package kubelet

import (
	"fmt"
	"net/netip"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"microvm.dev/microvm/internal/apitypes"
)

// podStatus is the pod's status from its VM's (st, when the daemon knows
// the VM) as a kubelet tells it of a container: the phase, the container's
// state with its exit code and restarts, the VM's addresses as the pod's
// IPs, and Ready from the readiness probe. A pod that finished keeps the
// end its record holds; a VM that could not be started is waiting for its
// next try, with the launch's error; a VM that stopped is terminated or
// waiting to be started again, as the pod's restart policy says.
func podStatus(pd *pod, st apitypes.VMStatus, known bool, nodeIP netip.Addr) *corev1.PodStatus {
	k := pd.rec.Pod
	start := metav1.NewTime(k.CreationTimestamp.Time)
	out := &corev1.PodStatus{Phase: corev1.PodPending, HostIP: nodeIP.String(), StartTime: &start}
	if nodeIP.IsValid() {
		out.HostIPs = []corev1.HostIP{{IP: nodeIP.String()}}
	}
	cs := corev1.ContainerStatus{Image: image(k)}
	if len(k.Spec.Containers) > 0 {
		cs.Name = k.Spec.Containers[0].Name
	}
	if known {
		cs.RestartCount = pd.rec.Restarts + int32(st.Restarts)
		cs.ContainerID = "microvm://" + st.Name
		if st.Spec != nil {
			for _, a := range st.Spec.Net.Addrs() {
				out.PodIPs = append(out.PodIPs, corev1.PodIP{IP: a.String()})
			}
			out.PodIP = st.Spec.Net.Address.String()
		}
	}
	last := lastTermination(st)
	if cs.RestartCount > 0 {
		out.Phase = corev1.PodRunning
	}
	ready := false
	switch {
	case pd.vm == nil:
		out.Phase, out.Reason, out.Message = corev1.PodFailed, "Unsupported", pd.rec.Refusal
		cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: "Unsupported", Message: pd.rec.Refusal}
	case pd.rec.Finished != nil:
		cs.State.Terminated = pd.rec.Finished
		out.Phase = finishedPhase(pd.rec.Finished)
	case pd.launchErr != "" && (!known || st.State == apitypes.Failed || st.State == apitypes.Stopped || st.State == apitypes.Created):
		cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: launchReason(pd.launchErr), Message: pd.launchErr}
		cs.LastTerminationState.Terminated = last
	case !known:
		cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: "ContainerCreating", Message: "the micro-VM is being created"}
	default:
		switch st.State {
		case apitypes.Running:
			out.Phase = corev1.PodRunning
			cs.State.Running = &corev1.ContainerStateRunning{StartedAt: metav1.NewTime(st.StartedAt)}
			cs.LastTerminationState.Terminated = last
			started := true
			cs.Started = &started
			ready = pd.ready
		case apitypes.Starting, apitypes.Created, apitypes.Saved:
			cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: "ContainerCreating", Message: "the micro-VM is booting"}
			cs.LastTerminationState.Terminated = last
		case apitypes.Backoff:
			out.Phase = corev1.PodRunning
			cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff", Message: st.LastExit}
			cs.LastTerminationState.Terminated = last
		case apitypes.Stopping:
			out.Phase = corev1.PodRunning
			cs.State.Running = &corev1.ContainerStateRunning{StartedAt: metav1.NewTime(st.StartedAt)}
		case apitypes.Stopped, apitypes.Failed:
			if end := finished(restartPolicy(k), st); end != nil {
				// Finished, before the provider recorded it.
				cs.State.Terminated = end
				out.Phase = finishedPhase(end)
				break
			}
			// To be started again (the provider's next try).
			out.Phase = corev1.PodRunning
			cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff", Message: ending(st)}
			cs.LastTerminationState.Terminated = last
		}
	}
	cs.Ready = ready
	out.ContainerStatuses = []corev1.ContainerStatus{cs}
	out.Conditions = conditions(out.Phase, ready, pd.readySince)
	return out
}

// restartPolicy is the pod's, Always when unset.
func restartPolicy(k *corev1.Pod) corev1.RestartPolicy {
	if k.Spec.RestartPolicy == "" {
		return corev1.RestartPolicyAlways
	}
	return k.Spec.RestartPolicy
}

// finished is how the pod ended when its VM, stopped or failed as st
// says, ended it under policy (nil when it is to run again): under Never
// any end is final, under OnFailure a successful one, under Always none.
func finished(policy corev1.RestartPolicy, st apitypes.VMStatus) *corev1.ContainerStateTerminated {
	if st.State != apitypes.Stopped && st.State != apitypes.Failed {
		return nil
	}
	end := lastTermination(st)
	if end == nil {
		end = &corev1.ContainerStateTerminated{ExitCode: 1, Reason: "VMFailed", Message: ending(st)}
	}
	if !st.StartedAt.IsZero() {
		end.StartedAt = metav1.NewTime(st.StartedAt)
	}
	end.FinishedAt = metav1.NewTime(time.Now())
	switch {
	case policy == corev1.RestartPolicyNever:
		return end
	case policy == corev1.RestartPolicyOnFailure && end.ExitCode == 0:
		return end
	}
	return nil
}

// finishedPhase is the phase of a pod that ended as end.
func finishedPhase(end *corev1.ContainerStateTerminated) corev1.PodPhase {
	if end.ExitCode == 0 {
		return corev1.PodSucceeded
	}
	return corev1.PodFailed
}

// ending is what the daemon says of how the VM ended.
func ending(st apitypes.VMStatus) string {
	switch {
	case st.Failure != "":
		return st.Failure
	case st.LastExit != "":
		return st.LastExit
	}
	return "the micro-VM is " + string(st.State)
}

// launchReason is a kubelet's waiting reason for a VM that could not be
// started with the launch error msg: its image could not be pulled, or
// something else kept it from running.
func launchReason(msg string) string {
	if strings.Contains(msg, "pull ") {
		return "ImagePullBackOff"
	}
	return "RunContainerError"
}

// lastTermination is the VM's last exit as a container's termination
// (nil before any): the workload's exit code where its end ended the VM.
func lastTermination(st apitypes.VMStatus) *corev1.ContainerStateTerminated {
	if st.LastExit == "" {
		return nil
	}
	t := &corev1.ContainerStateTerminated{Reason: "Error", Message: st.LastExit, ExitCode: 1}
	if st.ExitCode != nil {
		t.ExitCode = int32(*st.ExitCode)
	}
	if t.ExitCode == 0 {
		t.Reason = "Completed"
	}
	return t
}

// terminated is the status of a pod whose VM was removed.
func terminated(k *corev1.Pod, nodeIP netip.Addr) *corev1.PodStatus {
	now := metav1.NewTime(time.Now())
	name := ""
	if len(k.Spec.Containers) > 0 {
		name = k.Spec.Containers[0].Name
	}
	return &corev1.PodStatus{
		Phase: corev1.PodSucceeded, HostIP: nodeIP.String(), Reason: "Deleted", Message: "the micro-VM was removed",
		ContainerStatuses: []corev1.ContainerStatus{{
			Name: name, Image: image(k),
			State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{Reason: "Deleted", Message: "the micro-VM was removed", FinishedAt: now}},
		}},
		Conditions: conditions(corev1.PodSucceeded, false, time.Time{}),
	}
}

func image(k *corev1.Pod) string {
	if len(k.Spec.Containers) == 0 {
		return ""
	}
	return k.Spec.Containers[0].Image
}

// conditions are the pod's conditions for its phase and readiness.
func conditions(phase corev1.PodPhase, ready bool, since time.Time) []corev1.PodCondition {
	b := func(v bool) corev1.ConditionStatus {
		if v {
			return corev1.ConditionTrue
		}
		return corev1.ConditionFalse
	}
	t := metav1.NewTime(since)
	return []corev1.PodCondition{
		{Type: corev1.PodScheduled, Status: corev1.ConditionTrue},
		{Type: corev1.PodInitialized, Status: corev1.ConditionTrue},
		{Type: corev1.ContainersReady, Status: b(ready), LastTransitionTime: t},
		{Type: corev1.PodReady, Status: b(ready), LastTransitionTime: t},
	}
}

// statusKey is what of a status is worth telling Kubernetes again.
func statusKey(s *corev1.PodStatus) string {
	key := fmt.Sprintf("%s|%s|%s|%v", s.Phase, s.PodIP, s.Reason, s.Conditions[len(s.Conditions)-1].Status)
	for _, c := range s.ContainerStatuses {
		key += fmt.Sprintf("|%d|%v", c.RestartCount, c.Ready)
		switch {
		case c.State.Running != nil:
			key += "|running " + c.State.Running.StartedAt.String()
		case c.State.Waiting != nil:
			key += "|waiting " + c.State.Waiting.Reason
		case c.State.Terminated != nil:
			key += fmt.Sprintf("|terminated %d %s", c.State.Terminated.ExitCode, c.State.Terminated.Reason)
		}
	}
	return key
}

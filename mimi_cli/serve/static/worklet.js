// Microphone capture and playback for mimi serve's page, on the audio thread.
class Capture extends AudioWorkletProcessor {
  process(inputs) {
    const channel = inputs[0] && inputs[0][0];
    if (channel) this.port.postMessage(channel.slice(0));  // 128 samples a call
    return true;
  }
}

class Playback extends AudioWorkletProcessor {
  constructor() {
    super();
    this.queue = [];
    this.offset = 0;
    this.port.onmessage = (e) => this.queue.push(e.data);
  }
  process(inputs, outputs) {
    const out = outputs[0][0];
    let i = 0, played = 0;
    while (i < out.length && this.queue.length) {
      const head = this.queue[0];
      const n = Math.min(out.length - i, head.length - this.offset);
      for (let j = 0; j < n; j++) {
        out[i + j] = head[this.offset + j];
        if (head[this.offset + j] !== 0) played++;
      }
      i += n;
      this.offset += n;
      if (this.offset >= head.length) { this.queue.shift(); this.offset = 0; }
    }
    for (; i < out.length; i++) out[i] = 0;
    if (played) this.port.postMessage(played);
    return true;
  }
}

registerProcessor("mimi-capture", Capture);
registerProcessor("mimi-playback", Playback);

// The data events of an OpenAI event stream (a fetch response's body), parsed, as they arrive; [DONE] ends it.
// Shared by the benches that time streamed answers token by token.
export async function* sseEvents(body) {
  const dec = new TextDecoder();
  let buf = '';
  for await (const chunk of body) {
    buf += dec.decode(chunk, { stream: true });
    let at;
    while ((at = buf.indexOf('\n\n')) >= 0) {
      const ev = buf.slice(0, at);
      buf = buf.slice(at + 2);
      if (!ev.startsWith('data: ') || ev === 'data: [DONE]') continue;
      yield JSON.parse(ev.slice(6));
    }
  }
}

// Building the page without parsing HTML: every string given as a child becomes a text node,
// so captured text (addresses, EHLO names, replies, rule names) is shown as text and can
// never become markup. Attribute names come from this code only, never from data.
const SVG_NS = 'http://www.w3.org/2000/svg';

// el('td', {class: 'num'}, 'text', otherNode): an HTML element.
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  setAttributes(node, attrs);
  append(node, children);
  return node;
}

// svg('rect', {x: 1, width: 2}): an SVG element.
export function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  setAttributes(node, attrs);
  append(node, children);
  return node;
}

// Children: nodes, strings and numbers (as text), arrays of them; null and false are skipped.
export function append(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

// Replaces every child of `node`.
export function replaceChildren(node, ...children) {
  node.replaceChildren();
  return append(node, children);
}

function setAttributes(node, attrs) {
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith('on')) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? '' : String(value));
  }
}
